"""skdtda: distributional training data attribution for scikit-learn and skorch.

See ``docs/`` and the README. Public estimators are re-exported here.
"""

from .ensemble import SeedEnsembleClassifier, SeedEnsembleRegressor
from .exceptions import TrainingDivergedError, UndertrainedWarning
from .influence import InfluenceTransformer, UnrolledInfluence
from .pruning import DataPruner, PrunedEstimator

__version__ = "0.1.0.dev0"

__all__ = [
    "DataPruner",
    "InfluenceTransformer",
    "PrunedEstimator",
    "SeedEnsembleClassifier",
    "SeedEnsembleRegressor",
    "TrainingDivergedError",
    "UndertrainedWarning",
    "UnrolledInfluence",
    "__version__",
]
