"""Training core: the run pipeline every command shares (:mod:`~medft.training.pipeline`: data, model,
tuning, module, trainer, score, write), the Lightning module (:mod:`~medft.training.module`), its
callbacks and loggers (:mod:`~medft.training.callbacks`, :mod:`~medft.training.loggers`), and the
embedded pretrained model built on first use (:mod:`~medft.training.embedded`)."""
