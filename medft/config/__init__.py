"""Config plumbing, in layers (none imports a later one):

* :mod:`medft.config.search` — where configs are found (the user's config dirs, then medft's own);
* :mod:`medft.config.overrides` — command-line overrides as medft reads them before Hydra;
* :mod:`medft.config.resolvers` — medft's OmegaConf resolvers;
* :mod:`medft.config.validate` — a composed config checked before any expensive work, and Hydra started.
"""
