"""What reads a finished study's trials: the guards against overfitting the validation set
(:mod:`hpo.analysis.guards`), the HTML report (:mod:`hpo.analysis.report`) and the model plots
(:mod:`hpo.analysis.plots`).

Nothing is re-exported here: importing the package stays free of the guards' import of
:mod:`ensembles` (and through it Keras), which ``hpo report`` does not need.
"""
