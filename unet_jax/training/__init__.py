"""The state path: init -> jitted step -> checkpoint -> restore, and the loop that drives it.

`loop.train_and_evaluate(config, workdir)` is the entry point; `steps` holds the pure step,
`train_state` the state and optimizer, `checkpoint` the Orbax saves, `run_record` the workdir's
record of the run (config, history, data fingerprint), `finetune` the start from another run,
`guards` the non-finite and divergence checks, `metric_writer` the logs.
"""
