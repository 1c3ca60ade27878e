"""The benchmark harness: one trial, many trials, stored.

- :mod:`~cellc.harness.train`     one trial: SGD + Nesterov, input noise, early stopping, divergence
- :mod:`~cellc.harness.profiles`  smoke / quick / paper settings and the search space
- :mod:`~cellc.harness.search`    Optuna distributions and the reproducible random sampler
- :mod:`~cellc.harness.record`    the stored study / trial format (read by cellc.analysis)
- :mod:`~cellc.harness.storage`   opening storage, creating / resuming studies, stale trials
- :mod:`~cellc.harness.workers`   worker processes (one torch thread each) or inline runs
- :mod:`~cellc.harness.bench`     the coordinator: dispatch, store, resume, progress
"""
