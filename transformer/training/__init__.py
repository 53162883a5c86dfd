"""What only training needs: the loop and everything around it.

`loop.py` (the loop, one screen), `start.py` (run directory, data, model, optimizer, resume),
`run.py` (what a run holds), `run_checkpoint.py` (save, restore), `budget.py` (clock, time
budget), `precision.py` (precision: auto, timed), `log.py` (progress bar, Ctrl-C), `trackers.py`
(train.loggers behind one object) with `tracker.py` (what a tracker takes) and the three trackers
`tracker_tensorboard.py`, `tracker_wandb.py` and `tracker_mlflow.py`; `validation.py`, `loss.py`,
`schedule.py`, `divergence.py`, `moving_average.py`, `init_from.py` (train.init_from) and
`distributed.py` (torchrun). Nothing in the core package imports from here.
"""
