"""GeneralPoints: reach a target number from a hand of cards with + - * / and parentheses.

The package has one module per job:
  solver.py      `solve` / `solvable`: every distinct formula for a hand, with exact fractions.
  verifier.py    `verify`: reads a model's answer in either prompt style and scores it with the
                 paper's reward schedule. It never evaluates model output as code; it parses a
                 whitelist grammar itself. `verify_record`: `verify` for a generated record.
  prompts.py     a drawn hand's prompt and oracle answer, in either style.
  generation.py  `generate`: config, hands, records and (GP-VL) card images for every split;
                 `iter_records` makes the same records lazily, one at a time (what the generate
                 stage writes).
  images.py      GP-VL's card images (black suits for training, red for the visual-OOD set).

Prompt styles. `json` is the paper's: the answer is {"cards": [...], "number": [...], "formula": ...}.
`compact` suits a ~1M-parameter word-level model, every token separated by a space:
    prompt  Rule : J Q K = 10 10 10 . Cards : 5 J 8 . Target : 20
    answer  Numbers : 5 10 8 . Steps : 10 + 8 = 18 , 18 + 5 = 23 ...
For GP-VL the cards are in the image, not the prompt, and the answer starts with `Cards : 5 J 8 .`.
"""

from stages.envs.general_points.generation import (
    DEFAULTS,
    FACES,
    IMAGE_KEYS,
    RANKS,
    RULES,
    card_value,
    check_config,
    generate,
    iter_records,
)
from stages.envs.general_points.solver import MAX_CARDS, solvable, solve
from stages.envs.general_points.verifier import (
    CORRECT,
    ILLEGAL,
    MISRECOGNIZED,
    WRONG_NUMBERS,
    WRONG_VALUE,
    verify,
    verify_record,
)

__all__ = [
    "CORRECT",
    "DEFAULTS",
    "FACES",
    "ILLEGAL",
    "IMAGE_KEYS",
    "MAX_CARDS",
    "MISRECOGNIZED",
    "RANKS",
    "RULES",
    "WRONG_NUMBERS",
    "WRONG_VALUE",
    "card_value",
    "check_config",
    "generate",
    "iter_records",
    "solvable",
    "solve",
    "verify",
    "verify_record",
]
