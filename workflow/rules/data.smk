rule data:
    """Make the study's dataset ready before any training job: Fashion-MNIST unpacked in torchvision's layout (from
    Debian's package, or downloaded), CIFAR written once as class folders of PNGs (the marker last, when the tree is
    complete), or every image of an ImageFolder decoded (a corrupt file fails the rule, listed with every other one;
    the marker holds the counts: delete it to check changed data again)."""
    localrule: STUDY.dataset == "fashion_mnist"  # unpacking 30 MB needs no cluster job; the other two are jobs
    output:
        data_files(),
    params:
        command=data_command,
    log:
        f"results/{STUDY.name}/logs/data.log",
    threads: data_resource("threads")
    resources:
        mem_mb=data_resource("mem_mb"),
        runtime=data_resource("runtime"),
    conda:
        "../../environment.yml"
    shell:
        "{params.command}"
