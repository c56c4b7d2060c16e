"""KiloNeRF trainer: datasets, teachers, occupancy extraction, distillation, fine-tuning, evaluation."""
