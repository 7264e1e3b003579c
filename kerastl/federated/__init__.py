"""Personalised federated learning: FedAP / AdaFed and its baselines.

- `algorithms`: the registry of algorithms by name and their properties (what is aggregated,
  what stays local, whether W or a proximal term is needed).
- `statistics`: per-client BN-input statistics, merged exactly across batches.
- `aggregation`: FedAP's distance and weight matrix; every algorithm's aggregation rule
  (`round_update`), in plain TF ops.
- `local_training`: a client's SGD epochs (FedProx's proximal term) and evaluation.
- `simulation.FederatedSimulation`: the local engine (all clients in one process), with
  per-round checkpoints (`restore` resumes exactly) and TensorBoard scalars.
- `models`: the reference's client networks (sensor CNN, LeNet-5-BN, AlexNet-BN).
- `tff_process.build_fedap_process`: the same algorithms as TensorFlow Federated processes
  (federated environment only: TF 2.14, Keras 2, tensorflow-federated 0.87).

Everything here runs under Keras 2 and Keras 3 alike, so it imports in both environments.
"""
