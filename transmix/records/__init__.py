"""What the package writes and how it is traced: atomic writes (:mod:`.atomic`), a run folder's file names
(:mod:`.layout`), the code and stack that made a number (:mod:`.provenance`) and the tidy results table
(:mod:`.results`)."""
