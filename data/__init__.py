"""Physics datasets for HGN (simulation, rendering, TFDS builder, tf.data pipelines) and
target densities for NHF."""
