"""From a study's table to what a reader sees: intervals and paired differences (:mod:`.stats`), the analyses the
notebooks plot, each a tested function, and the setup tables and conclusions of every page (:mod:`.pages`)."""
