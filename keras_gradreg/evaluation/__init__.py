"""Robustness evaluation: two protocols, one idea per module.

- minimum_distance: the paper's protocol (Finlay & Oberman, 2019): each image's smallest
  adversarial distance over every attack (0 for an image misclassified already);
  "% error at epsilon" is the share of images whose best distance is <= epsilon.
- epsilon_search: the per-image search over radii that turns a fixed-budget attack into
  a minimum-distance one.
- cascade: AutoAttack's protocol (Croce & Hein, 2020; RobustBench): robust error at a
  radius, each attack on the images the earlier ones left unbroken.
- inputs: every argument and the data checked, and the images chosen, before any attack.
- sanity: the checks of Carlini et al. (2019) run with every minimum-distance evaluation.
- reports, tables, output: what was measured, as tables, as result files.
- progress: the progress bar and the batch loop that advances it.

The attacks themselves, and the judge that verifies their examples, are keras_gradreg.attacks.
"""

from keras_gradreg.evaluation.cascade import evaluate_autoattack
from keras_gradreg.evaluation.inputs import PROTOCOLS
from keras_gradreg.evaluation.inputs import check_attacks
from keras_gradreg.evaluation.minimum_distance import evaluate_robustness
from keras_gradreg.evaluation.output import AUTOATTACK_FILE
from keras_gradreg.evaluation.output import RESULT_FILES
from keras_gradreg.evaluation.output import existing_results
from keras_gradreg.evaluation.output import write_autoattack_results
from keras_gradreg.evaluation.output import write_results
from keras_gradreg.evaluation.output import write_set
from keras_gradreg.evaluation.progress import LOG_INTERVAL
from keras_gradreg.evaluation.progress import progress_bar
from keras_gradreg.evaluation.progress import workers
from keras_gradreg.evaluation.reports import GIVEN
from keras_gradreg.evaluation.reports import MASKING_CHECK
from keras_gradreg.evaluation.reports import AutoAttackReport
from keras_gradreg.evaluation.reports import RobustnessReport
from keras_gradreg.evaluation.reports import SanityCheck
from keras_gradreg.evaluation.sanity import CHECK_IMAGES
from keras_gradreg.evaluation.sanity import GRADIENT_FREE_SHARE
from keras_gradreg.evaluation.sanity import MORE_STEPS_CHANGE
from keras_gradreg.evaluation.sanity import UNBOUNDED_SUCCESS
from keras_gradreg.evaluation.tables import format_autoattack_table
from keras_gradreg.evaluation.tables import format_table
from keras_gradreg.evaluation.tables import render_table

__all__ = (
    "AUTOATTACK_FILE",
    "AutoAttackReport",
    "CHECK_IMAGES",
    "check_attacks",
    "evaluate_autoattack",
    "evaluate_robustness",
    "existing_results",
    "format_autoattack_table",
    "format_table",
    "GIVEN",
    "GRADIENT_FREE_SHARE",
    "LOG_INTERVAL",
    "MASKING_CHECK",
    "MORE_STEPS_CHANGE",
    "progress_bar",
    "PROTOCOLS",
    "render_table",
    "RESULT_FILES",
    "RobustnessReport",
    "SanityCheck",
    "UNBOUNDED_SUCCESS",
    "workers",
    "write_autoattack_results",
    "write_results",
    "write_set",
)
