"""The Neural ODE paper's experiments (Chen et al. 2018), apart from the library: the
``neuralode`` command line (:mod:`.cli`), the experiments behind its commands
(:mod:`.experiments`), their data sets (:mod:`.data`), the MNIST classifiers
(:mod:`.mnist_models`), the training loop (:mod:`.training`) and the figures (:mod:`.plots`).

It uses the library only through its public names (``neuralode``, ``neuralode.nn``,
``neuralode.gradients``), and needs the ``experiments`` extra::

    pip install "neuralode[experiments]"
"""
