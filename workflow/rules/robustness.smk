rule robustness:
    """The study's robustness suites on a finished run (raw and EMA weights), as tidy rows."""
    input:
        "results/{study}/train/{run_id}/final.pt",
    output:
        "results/{study}/robustness/{run_id}.csv",
    params:
        run=run_dir,
        args=robustness_args,
    log:
        "results/{study}/logs/robustness/{run_id}.log",
    threads: resource("robustness", "threads")
    resources:
        mem_mb=resource("robustness", "mem_mb"),
        runtime=resource("robustness", "runtime"),
        gpu=resource("robustness", "gpus"),
    conda:
        "../../environment.yml"
    shell:
        "transmix robustness --run {params.run:q} --out {output:q} --threads {threads} {params.args} > {log:q} 2>&1"
