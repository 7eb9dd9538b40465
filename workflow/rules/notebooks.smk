rule notebook:
    """Execute a notebook on the study's table with papermill, render it to HTML without its code (the executed
    .ipynb beside it keeps the code), keep its figures as PNG."""
    input:
        notebook_inputs,
    output:
        ipynb="results/{study}/notebooks/{name}.ipynb",
        html=report("results/{study}/notebooks/{name}.html", caption="../report/notebook.rst", category="Notebooks"),
        figures=report(
            directory("results/{study}/figures/{name}"),
            patterns=["{figure}.png"],
            caption="../report/figure.rst",
            category="Figures",
            subcategory="{name}",
        ),
    params:
        outdir="results/{study}/notebooks",
        notebook="notebooks/{name}.ipynb",
        args=notebook_args,
    log:
        "results/{study}/logs/notebooks/{name}.log",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=20,
    conda:
        "../../environment.yml"
    shell:
        "(mkdir -p {output.figures:q} && papermill {params.notebook:q} {output.ipynb:q} --cwd . {params.args} "
        "&& jupyter nbconvert --to html --no-input --output-dir {params.outdir:q} {output.ipynb:q}) > {log:q} 2>&1"
