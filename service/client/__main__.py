import sys

from service.client import main

sys.exit(main())
