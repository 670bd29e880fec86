"""Cross-cutting pieces shared by features, training and serving: settings, errors, the
serving-bundle format and the `churn` command line."""
