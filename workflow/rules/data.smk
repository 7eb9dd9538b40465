rule data:
    """Fashion-MNIST in torchvision's layout (from Debian's package, or downloaded)."""
    output:
        data_files(),
    params:
        root=data_root,
    log:
        f"{data_dir()}/prepare.log",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=30,
    conda:
        "../../environment.yml"
    shell:
        "transmix data --root {params.root:q} > {log:q} 2>&1"
