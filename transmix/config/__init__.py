"""What a run and a study are, with no torch, so that the Snakefile and ``--help`` load at once: strict reading
(:mod:`.strict`), one run's config (:mod:`.run`), a study's runs (:mod:`.study`), the robustness protocol
(:mod:`.robustness`)."""
