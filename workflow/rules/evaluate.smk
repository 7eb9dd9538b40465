rule evaluate:
    """Top-1/top-5 of the raw and EMA weights on the full test split, as tidy rows."""
    input:
        "results/{study}/train/{run_id}/final.pt",
    output:
        "results/{study}/evaluate/{run_id}.csv",
    params:
        run=run_dir,
        images=STUDY.evaluation_images,
        pairs=lambda wildcards: STUDY.pairs(wildcards.run_id),
    log:
        "results/{study}/logs/evaluate/{run_id}.log",
    threads: resource("evaluate", "threads")
    resources:
        mem_mb=resource("evaluate", "mem_mb"),
        runtime=resource("evaluate", "runtime"),
        gpu=resource("evaluate", "gpus"),
    conda:
        "../../environment.yml"
    shell:
        "transmix evaluate --run {params.run:q} --out {output:q} --images {params.images} --pairs {params.pairs} --threads {threads} > {log:q} 2>&1"


rule ablation:
    """One point of the ablation grid: its runs' tables together (ask for this file to run one point). Joining
    tables needs no cluster job: it runs where Snakemake runs."""
    localrule: True
    input:
        ablation_csvs,
    output:
        "results/{study}/ablations/{point}.csv",
    log:
        "results/{study}/logs/ablations/{point}.log",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        "../../environment.yml"
    shell:
        "transmix collect --no-paper --out {output:q} {input:q} > {log:q} 2>&1"


rule check_tables:
    """Every per-run table checked whole before `collect` starts: Snakemake deletes a job's output before running
    it, so a cut table must stop the workflow here, while the last good results.csv is still there."""
    localrule: True
    input:
        evaluation_csvs,
    output:
        temp("results/{study}/logs/tables.checked"),
    log:
        "results/{study}/logs/check_tables.log",
    run:
        from transmix.records.results import check_run_tables  # pandas: imported by this job only, not at every parse

        Path(log[0]).write_text(check_run_tables(input))  # a SchemaError naming the cut table goes to the terminal
        Path(output[0]).touch()


rule collect:
    """One validated table for the study, with the published numbers beside ours; where Snakemake runs."""
    localrule: True
    input:
        tables=evaluation_csvs,
        checked="results/{study}/logs/tables.checked",
    output:
        report("results/{study}/results.csv", caption="../report/results.rst", category="Tables"),
    log:
        "results/{study}/logs/collect.log",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        "../../environment.yml"
    shell:
        "transmix collect --out {output:q} {input.tables:q} > {log:q} 2>&1"
