"""Code shared by the Spark jobs (`jobs/`) and the model code (`dcn/`): configuration,
column names and table schemas, the Spark session, and atomic publishing of outputs."""
