"""Hyperopt behind the driver interface: the space as Hyperopt's expression, ask/tell over its ``Trials``."""

from hpo.drivers.hyperopt.driver import ALGOS, HyperoptDriver
from hpo.drivers.hyperopt.space import from_hyperopt, to_hyperopt

__all__ = ["ALGOS", "HyperoptDriver", "from_hyperopt", "to_hyperopt"]
