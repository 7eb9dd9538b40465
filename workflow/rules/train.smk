rule train:
    """One training run; a checkpoint left by an interrupted job is resumed. More than one GPU: torchrun (DDP)."""
    input:
        data_files(),
        teacher_final,
    output:
        # Only the file written last, atomically: a killed job leaves no output, so the next run simply starts
        # the job again and `transmix train` resumes from the checkpoint beside it.
        "results/{study}/train/{run_id}/final.pt",
    params:
        launcher=train_launcher,
        threads=threads_per_process,
        out=run_dir,
        args=train_args,
    log:
        "results/{study}/logs/train/{run_id}.log",
    threads: resource("train", "threads")
    resources:
        mem_mb=resource("train", "mem_mb"),
        runtime=resource("train", "runtime"),
        gpu=resource("train", "gpus"),
    conda:
        "../../environment.yml"
    shell:
        # Each finished epoch's line goes to the terminal (stdout) as well as the log; everything else to the log.
        ": > {log:q} && {params.launcher} train --out {params.out:q} --set-aside --threads {params.threads} "
        "--progress epochs {params.args} 2>> {log:q} | tee -a {log:q}"
