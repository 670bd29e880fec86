"""The ground floor shared by features, training and serving: settings, errors, the
serving-bundle format, the console and the compute engine. It imports none of those stages;
the command line that assembles them is ``churn_cli``."""
