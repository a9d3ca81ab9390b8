"""``python -m flowrun_operator.cli``: the same as ``kubectl-flowrun``."""

from flowrun_operator.cli.app import app

if __name__ == "__main__":
    app(prog_name="kubectl-flowrun")
