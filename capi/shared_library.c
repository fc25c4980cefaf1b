/* libtcr.so is the whole static library (WHOLE_ARCHIVE) behind capi/libtcr.map: this file only
 * gives the shared target a source of its own (CMake wants one) and checks, when the shared
 * library is built, that tcr.h stands on its own as C. */
#include "tcr.h"

#if TCR_VERSION != TCR_VERSION_MAJOR * 10000 + TCR_VERSION_MINOR * 100 + TCR_VERSION_PATCH
#error "TCR_VERSION does not follow its parts"
#endif
