"""ecgtool: train and use an ECG–text contrastive model on your own 12-lead ECGs and reports."""

__version__ = "0.1.0"
