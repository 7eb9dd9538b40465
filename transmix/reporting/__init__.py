"""From a study's table to what a reader sees, each number a tested function and no analysis inside a notebook.

:mod:`.stats` holds the t-interval and the difference paired by seed that every page uses, and :mod:`.verdicts` the
sentences the intervals choose. One module a page: :mod:`.main_results` (01), :mod:`.suites` (02, robustness),
:mod:`.ablations` (03), :mod:`.attention_area` (04), :mod:`.dynamics` (05), :mod:`.distillation` (06).
:mod:`.pages` opens every page with its setup and prints ``transmix summarize``; :mod:`.figures` keeps the figures.
"""
