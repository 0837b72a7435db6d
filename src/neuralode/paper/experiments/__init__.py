"""The experiments behind ``neuralode <command>``; each module offers ``add_arguments`` and
``run`` for the command line and a plain function for use from Python."""
