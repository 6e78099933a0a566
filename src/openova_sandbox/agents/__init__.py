"""The agents the server installs and runs: where managed installs live (``paths``), how
they are built and removed (``installer``), what a binary reports as its version
(``versions``) and each catalogue row's state as the CLI and the API list it
(``status``)."""
