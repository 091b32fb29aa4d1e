"""Full-size benchmarks with random weights: the library behind `vidcore bench` and bench/gpu.

Nothing here is needed to generate a video. The pieces are small on purpose
so that the CLI, the GPU acceptance run and a notebook can use the same code:
`random_weights` makes a meta-built module real on the device, `inputs` makes
random conditions shaped as a backend's encoders would, `timing` times calls
with the device synchronised, and `denoiser` times one backend's denoiser
under memory presets and against a reference implementation.
"""
