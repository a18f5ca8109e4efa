"""Training the generator's four stages from the command line (`sound-generator train STAGE`).

See `synth.training.stages` for what each stage trains and writes, `synth.training.loop` for the
shared loop (progress bar, log, resumable checkpoints, loss curve) and checkpoints/RECIPE.md for
the commands that reproduce the shipped weights.
"""
