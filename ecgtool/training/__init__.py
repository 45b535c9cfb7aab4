"""``ecgtool train``: contrastive training of the ECG encoder against cached text vectors.

``train`` holds the recipe (``TrainConfig``) and the loop; ``data`` pairs a store split with its
text vectors; ``text_choice`` picks each record's text per step; ``augment`` changes signals;
``loss`` and ``label_targets`` are the objectives; ``weight_average`` the EMA of the weights;
``distributed`` the torchrun ranks.
"""
