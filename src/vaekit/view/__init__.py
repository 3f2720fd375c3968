"""Looking at runs: image grids (:mod:`.images`), figures (:mod:`.plots`), the pictures of an
image run (:mod:`.pictures`), ``report.html`` (:mod:`.report`), the latent explorer
(:mod:`.explorer`, pages in ``static/``), TensorBoard logging (:mod:`.board`) and the training
callbacks that write them (:mod:`.outputs`). Nothing outside this package imports matplotlib
or serves HTTP."""
