"""A study's config: typed sections read from YAML or a dict and validated before anything runs
(:mod:`~hpo.config.schema`), and the user callbacks a config names (:mod:`~hpo.config.callbacks`)."""

from hpo.config.checks import validate
from hpo.config.loading import from_dict, load
from hpo.config.schema import (COMBINES, METHODS, NAME_RE, PRUNERS, SAMPLERS, DataSection, DriverSection,
                               EnsembleSection, ExecutorSection, GuardsSection, ObjectiveSection, PlotsSection,
                               ReportSection, SpaceSection, StudyConfig, StudySection, TensorBoardSection,
                               TrackingSection, TrainingSection)

__all__ = ["COMBINES", "METHODS", "NAME_RE", "PRUNERS", "SAMPLERS", "DataSection", "DriverSection",
           "EnsembleSection", "ExecutorSection", "GuardsSection", "ObjectiveSection", "PlotsSection", "ReportSection",
           "SpaceSection", "StudyConfig", "StudySection", "TensorBoardSection", "TrackingSection", "TrainingSection",
           "from_dict", "load", "validate"]
