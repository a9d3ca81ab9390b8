"""The FlowSchedule controller: FlowRuns created on a cron schedule or an interval."""
