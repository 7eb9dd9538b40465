if STUDY.dataset == "imagefolder":

    rule data:
        """Decode every image of the study's ImageFolder before any training job starts; a corrupt file fails the
        rule, listed with every other one. The marker holds the counts; delete it to check changed data again."""
        output:
            data_files(),
        params:
            root=STUDY.data_dir,
        log:
            f"results/{STUDY.name}/logs/data.log",
        threads: data_resource("threads")
        resources:
            mem_mb=data_resource("mem_mb"),
            runtime=data_resource("runtime"),
        conda:
            "../../environment.yml"
        shell:
            "transmix data --check --root {params.root:q} --workers {threads} > {output:q} 2> {log:q}"

elif STUDY.dataset in ("cifar10", "cifar100"):

    rule data:
        """CIFAR written once as class folders of PNGs under the study's data_dir (from torchvision's files there, or
        downloaded); the marker is written last, when the tree is complete."""
        output:
            data_files(),
        params:
            root=STUDY.data_dir,
            dataset=STUDY.dataset,
        log:
            f"results/{STUDY.name}/logs/data.log",
        threads: 1
        resources:
            mem_mb=data_resource("mem_mb"),
            runtime=data_resource("runtime"),
        conda:
            "../../environment.yml"
        shell:
            "transmix data --dataset {params.dataset} --root {params.root:q} > {log:q} 2>&1"

else:

    rule data:
        """Fashion-MNIST in torchvision's layout (from Debian's package, or downloaded). Unpacking 30 MB needs no
        cluster job: it runs where Snakemake runs (the ImageFolder check above is a cluster job)."""
        localrule: True
        output:
            data_files(),
        params:
            root=data_root,
        log:
            f"{STUDY.data_dir}/prepare.log",
        threads: data_resource("threads")
        resources:
            mem_mb=data_resource("mem_mb"),
            runtime=data_resource("runtime"),
        conda:
            "../../environment.yml"
        shell:
            "transmix data --root {params.root:q} > {log:q} 2>&1"
