"""Classes: the user's own classes, their labelled tiles, classifiers and suggestions.

Labels are stored in the cache; classifiers are calibrated logistic regressions on embeddings.
"""

from backend.classes.active_learning import Suggestions, suggest
from backend.classes.classifier import (
    Classification,
    ClassifierReport,
    classify_scope,
    train_classifier,
)
from backend.classes.user_classes import (
    Label,
    UserClass,
    add_labels,
    classes,
    create_class,
    get_class,
)

__all__ = [
    "Classification",
    "ClassifierReport",
    "Label",
    "Suggestions",
    "UserClass",
    "add_labels",
    "classes",
    "classify_scope",
    "create_class",
    "get_class",
    "suggest",
    "train_classifier",
]
