"""Training and its run folder: the loop (:mod:`.train`), one step of any method (:mod:`.step`), the checkpoint
(:mod:`.checkpoint`), whether a folder may be trained into (:mod:`.run_folder`), the epoch's sums (:mod:`.meter`),
devices and processes (:mod:`.runtime`), top-k accuracy for validation and every later measurement (:mod:`.accuracy`),
and a teacher for distillation (:mod:`.distill`). Nothing here imports the reporting layer or pandas."""
