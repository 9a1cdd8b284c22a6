"""`llada reproduce NAME`: one claim of the paper, trained for and measured on the built-in world.

    llada reproduce reversal     diffusion vs AR on forward and reverse fact questions (Table 4)
    llada reproduce remasking    low-confidence vs random (and margin, entropy) remasking over step counts,
                                 on 2-digit addition (a model fine-tuned on it from scratch)
    llada reproduce semi-ar      sudoku models fine-tuned with many EOS after each answer and with one,
                                 sampled in one block, in blocks, and under the EOS rules of App. B.4
    llada reproduce bound        the Eq. 3/4 bound beside the AR model's exact NLL, over training
    llada reproduce any-order    filling a blank before its clues: diffusion (both sides) vs AR
    llada reproduce planning     diffusion vs AR on sudoku and countdown, at the same budget
    llada reproduce conversion   an AR model converted to block diffusion and trained on, vs diffusion from
                                 scratch for the same total steps, on 2-digit addition
    llada reproduce all          every claim, sharing the models

Each claim writes OUT_DIR/NAME/report.md, NAME.png and results.json. The models are trained once
per (size, seed) under OUT_DIR/models with the recipe of the size (`llada.recipe.RECIPES`), with
equal budgets for the diffusion model and its autoregressive baseline (same world, data, model
shape, steps and learning rates: only the loss and the attention mask differ), and shared by the
claims; --diffusion / --ar reuse models trained elsewhere (their SFT model directories). A claim
on a reasoning task (remasking, semi-ar, planning, conversion) uses models fine-tuned from scratch on the
task (the recipe's `TaskRecipe`s) instead, trained under OUT_DIR/models/SIZE-seedSEED-TASK.

Every figure is an accuracy over n items with its standard error sqrt(p (1 - p) / n); a
difference between two models on the same items carries the paired standard error. A claim
"holds" when the difference it predicts exceeds two standard errors; otherwise the report says
it did not hold at this scale, with the numbers.

The package, by room:

    reversal.py, remasking.py, semi_ar.py, bound.py, any_order.py, planning.py, conversion.py
                   one claim each: what it measures and how (`measure`), its verdict (`judge`),
                   its plot, and the models it needs, declared as a `Claim`
    claims.py      the claims by name (a new claim: a module and one line there)
    base.py        `Claim` and `Report`, what a claim module declares and returns
    measure.py     the sampler setting and one built-in task run on one model
    models.py      the models: trained or given, made ready by `Models.ensure`, then loaded
    report.py      writing report.md, NAME.png and results.json
    run.py         claims and sizes by name, the check of given models, one claim's run

The statistics (accuracy with its standard error, paired differences, the two-standard-error rule)
are llada/stats.py, shared with `llada.tasks.evaluate`. The `llada reproduce` command is llada/commands/reproduce.py.
"""

from llada.reproduce.base import Claim, Report
from llada.reproduce.claims import CLAIMS
from llada.reproduce.models import Models
from llada.reproduce.run import SIZES, check_given, claim_names, recipe_for, run_claim
from llada.stats import Accuracy, exceeds_two_se, paired_difference

__all__ = ["CLAIMS", "SIZES", "Accuracy", "Claim", "Models", "Report", "check_given", "claim_names",
           "exceeds_two_se", "paired_difference", "recipe_for", "run_claim"]
