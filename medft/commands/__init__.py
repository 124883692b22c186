"""The ``medft`` commands, one module each (``medft.cli`` dispatches ``medft <command>`` to ``main(args)``).

* ``train`` — train and test one run (or a Hydra sweep with ``-m``): :mod:`medft.commands.train`
* ``eval`` — evaluate a trained run on a dataset, or re-score its predictions: :mod:`medft.commands.eval`
  (``rescore=``: :mod:`medft.commands.rescore`)
* ``data`` — check a dataset root: :mod:`medft.commands.data`
* ``params`` — trainable parameters of every tune mode: :mod:`medft.commands.params`
* ``report`` — the results report: tables and plots of every run under run / sweep dirs:
  :mod:`medft.commands.report` (not report *generation*, the task: ``medft.metrics.report_gen``,
  ``medft.data.report_gen``)
* ``export`` — a run as a Hugging Face model or a peft adapter: :mod:`medft.commands.export`
* ``ask`` — answer questions about an image with a trained run: :mod:`medft.commands.ask`
* ``pretrain`` — pretrain a small Med-VLM offline into a checkpoint dir: :mod:`medft.commands.pretrain`

Commands are thin: they read their arguments and call the library, above all the run pipeline they
share, :mod:`medft.training.pipeline` (data, model, tuning, module, trainer, score, write; a trained run
rebuilt). No command imports another and the library never imports a command
(tests/test_package_layout.py checks both). The wrapper every run shares (error.txt, exit status, multirun
survival) is :mod:`medft.runs.runner`.
"""
