// Entry of dist/kata-supervisor.cjs (see ./daemon.ts).
import { supervisorMain } from "./daemon";

supervisorMain();
