"""Every `llada VERB`: one module per command (or pair of commands), each a typed function whose
parameters are its flags; `llada/cli.py` dispatches to them by name and imports only the one
chosen, so `llada --help` stays instant.

    quickstart.py   llada quickstart: the main job on built-in data
    train.py        llada train, llada sft (the flags are TrainConfig's fields)
    generate.py     llada generate, llada chat
    evaluate.py     llada eval: the built-in tasks, ablations and the AR baseline
    reproduce.py    llada reproduce: a claim of the paper
    lm_eval.py      llada lm-eval: lm-eval's command line with the `llada` model registered
    poem.py         llada poem: the reversal-poem task (Table 4)
    serve.py        llada serve: the OpenAI-compatible server
    checkpoint.py   llada info, llada push
    convert.py      llada convert: re-save a model directory, or turn a causal LM into a mask predictor
    flags.py        the flags the commands share, generated from SamplerOptions and LoadOptions

The library never imports this package (tests/unit/test_imports.py checks it): what a command does
beyond reading its flags and printing lives in the library, where Python users reach it too.
"""
