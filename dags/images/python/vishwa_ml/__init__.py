"""vishwa_ml: the code the example ML pipelines share, installed in vishwa-examples/python-ml:1.

dags/cake-popularity and dags/student-intelligence keep only what is their own (their data,
features, training, checks); what both do the same way lives here, once:

    io_paths      where a stage reads its inputs and writes its outputs and metrics
    validation    the validation report every validate stage prints and writes
    driftstats    PSI and KS drift statistics and the drift stage's verdict
    gate          `python3 -m vishwa_ml.gate`: promote a model only when a metric clears a bar
    dockerapi     a Docker Engine API client over the mounted unix socket (standard library)
    package       `python3 -m vishwa_ml.package`: a model image with a model card
    deploy        `python3 -m vishwa_ml.deploy`: run that image as the model's container
    serve         the prediction server the model image runs (`python3 -m vishwa_ml.serve`)

dags/images/build-python-ml.sh copies this folder into the image's
/usr/lib/python3/dist-packages; dags/images/python/tests holds its unit tests.
"""
