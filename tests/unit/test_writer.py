import asyncio

from flowrun_operator.handlers.writer import CoalescingWriter


def test_writes_are_serialized_per_key_and_coalesced() -> None:
    async def scenario() -> list[str]:
        writer = CoalescingWriter(concurrency=4)
        done: list[str] = []
        gate = asyncio.Event()

        def write(label: str, wait: bool = False):
            async def run() -> None:
                if wait:
                    await gate.wait()
                done.append(label)

            return run

        writer.submit("a", write("a1", wait=True))
        writer.submit("a", write("a2"))  # replaced by a3 before it is sent
        writer.submit("a", write("a3"))
        writer.submit("b", write("b1"))
        await asyncio.sleep(0.01)
        assert done == ["b1"]  # b is not held up by a
        gate.set()
        await writer.close(grace=1.0)
        return done

    assert asyncio.run(scenario()) == ["b1", "a1", "a3"]
