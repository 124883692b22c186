"""Process hygiene every layer may use and that uses no other medft module: one-line errors
(:mod:`~medft.util.errors`), atomic writes (:mod:`~medft.util.files`), YAML/JSON read without code
(:mod:`~medft.util.safe_load`), secrets kept out of logs (:mod:`~medft.util.redact`), library chatter
silenced (:mod:`~medft.util.quiet`), CPU threads per job (:mod:`~medft.util.threads`)."""
