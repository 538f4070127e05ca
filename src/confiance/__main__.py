from confiance.cli import main

# Guarded: the proxy's trace writer runs in a spawned process, which imports this module
# under another name and must not start the CLI again.
if __name__ == "__main__":
    main()
