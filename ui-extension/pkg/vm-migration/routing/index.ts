import SourcesPage from '../pages/sources.vue';
import VmsPage from '../pages/vms.vue';
import ImportPage from '../pages/import.vue';
import JobsPage from '../pages/jobs.vue';
import { PRODUCT, ROUTE } from '../config/types';

const meta = { product: PRODUCT, pkg: PRODUCT };
const base = `/c/:cluster/${ PRODUCT }`;

// Our pages. Details and forms of our types use the shell's generic resource
// routes (c-cluster-product-resource…), which pick our detail/ and edit/
// components by type.
export default [
  {
    name: `c-cluster-${ PRODUCT }`, path: base, redirect: { name: ROUTE.SOURCES }, meta
  },
  {
    name: ROUTE.SOURCES, path: `${ base }/sources`, component: SourcesPage, meta
  },
  {
    name: ROUTE.VMS, path: `${ base }/vms`, component: VmsPage, meta
  },
  {
    name: ROUTE.IMPORT, path: `${ base }/import`, component: ImportPage, meta
  },
  {
    name: ROUTE.JOBS, path: `${ base }/jobs`, component: JobsPage, meta
  },
];
