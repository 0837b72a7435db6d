"""The solver core: config (parse once), steppers, controllers, the one loop, its executions
(eager, per-sample, compiled), flat states and statistics. See docs/design.md."""
