import sys

from kikuchipy_cnn.cli import main

sys.exit(main())
