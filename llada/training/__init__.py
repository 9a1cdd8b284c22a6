"""Training: pretraining (Eq. 3), SFT (Eq. 5) and the autoregressive baseline, on accelerate.

    from llada.training.config import TrainConfig
    from llada.training.trainer import run
    model_dir = run(TrainConfig(model="tiny", out_dir="runs/pt", max_steps=200))

One room per concern, each importing only the rooms listed before it:

    config.py       TrainConfig: every option of `llada train` / `llada sft`, validated once
    data.py         a stage's rows and batches (packed text, rendered conversations), the batch plan
                    and the seeded noise generators that make a run reproducible
    objectives/     the registry of (stage, objective) -> Objective: noise and loss (Eq. 3, Eq. 5, AR),
                    one file per algorithm over a shared base
    optimizer.py    AdamW with its decay groups, the warmup-cosine schedule
    state.py        a checkpoint's trainer state (optimizer, schedule, scaler, RNG), written and read as data,
                    each value checked against the object it is for
    integrity.py    whether a checkpoint or a model directory is whole and may be read: cheap checks of its
                    files (regular, inside it), its state.json values and headers, before anything is built
    checkpoints.py  Checkpoints: one run's checkpoints, written atomically, found, checked, set aside,
                    pruned and resumed
    build.py        what a run trains: the model and its tokenizer, built once (fresh, from a directory,
                    or from the checkpoint it resumes)
    metrics.py      metrics.jsonl, TensorBoard, W&B and the loss curves
    trainer.py      the Trainer: the loop, a list of calls into the rooms above

The `llada train` and `llada sft` commands are llada/commands/train.py.
"""
