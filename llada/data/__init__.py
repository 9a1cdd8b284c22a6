"""Datasets: the built-in world (`world`), pretraining text (`pretrain`) and chat SFT data (`sft`)."""
