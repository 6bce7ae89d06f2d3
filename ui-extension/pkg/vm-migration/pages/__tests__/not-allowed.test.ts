import { shallowMount } from '@vue/test-utils';

// The shell's table and form components are not what these tests look at (and
// some of them need a full type-aware compile): stand-ins with their names.
const stub = (name: string) => ({ __esModule: true, default: { name, render: () => null } });

jest.mock('@shell/components/SortableTable', () => stub('SortableTable'));
jest.mock('@shell/components/ResourceTable', () => stub('ResourceTable'));
jest.mock('@shell/components/Loading', () => stub('Loading'));
jest.mock('@shell/components/form/LabeledSelect', () => stub('LabeledSelect'));
jest.mock('@components/Form/LabeledInput', () => ({ LabeledInput: { name: 'LabeledInput', render: () => null } }));
jest.mock('@components/Banner', () => ({ Banner: { name: 'Banner', render: () => null } }));
jest.mock('@components/BadgeState', () => ({ BadgeState: { name: 'BadgeState', render: () => null } }));
import Sources from '../sources.vue';
import TypePage from '../../components/TypePage.vue';
import InventoryList from '../../list/inventory.harvesterhci.io.virtualmachine.vue';
import JobList from '../../list/importjob.harvesterhci.io.virtualmachine.vue';
import NotAllowed from '../../components/NotAllowed.vue';

// A store that may list what `canList` says, and answers findAll/findPage with
// `answer` (a rejection for errors).
function store({ canList = true, schema = { id: 'x', attributes: { columns: [] }, links: {} } as any, answer = Promise.resolve([]) as Promise<any> } = {}) {
  return {
    getters: {
      'cluster/canList':           () => canList,
      'cluster/schemaFor':         () => schema,
      'cluster/all':               () => [],
      'cluster/havePage':          () => undefined,
      'cluster/paginationEnabled': () => true,
    },
    dispatch: jest.fn(() => answer.catch((e) => Promise.reject(e))),
  };
}

// Mounts a page and runs its fetch hook as the shell does.
async function mount(component: any, $store: any, props: any = {}) {
  const wrapper = shallowMount(component, {
    props,
    global: { mocks: { $store, $fetchState: { pending: false }, $route: { params: { cluster: 'local' }, query: {} } } },
  });

  await component.fetch.call(wrapper.vm);
  await wrapper.vm.$nextTick();

  return wrapper;
}

const forbidden = () => Promise.reject({ _status: 403, message: 'inventory is forbidden' });
const broken = () => Promise.reject({ _status: 500, message: 'etcd is down' });

describe('a user without RBAC sees "not allowed", not a broken page', () => {
  it('on Sources, when no source kind may be listed', async() => {
    const page = await mount(Sources, store({ canList: false }));

    expect(page.findComponent(NotAllowed).exists()).toBe(true);
  });

  it('on Sources, when listing is refused (403)', async() => {
    const page = await mount(Sources, store({ answer: forbidden() }));

    expect(page.findComponent(NotAllowed).exists()).toBe(true);
  });

  it('on the inventory and jobs pages, when the schema is missing', async() => {
    for (const list of [InventoryList, JobList]) {
      const page = shallowMount(TypePage, {
        props:  { type: 'inventory.harvesterhci.io.virtualmachine', list, titleKey: 'vmMigration.inventory.title' },
        global: { mocks: { $store: store({ schema: null }) } },
      });

      expect(page.findComponent(NotAllowed).exists()).toBe(true);
    }
  });

  it('on the inventory and jobs lists, when the API refuses (403)', async() => {
    for (const list of [InventoryList, JobList]) {
      const page = await mount(list, store({ answer: forbidden() }), { schema: { id: 'x', attributes: { columns: [] } } });

      expect(page.findComponent(NotAllowed).exists()).toBe(true);
    }
  });
});

describe('other errors are shown as they are', () => {
  it('on Sources', async() => {
    const page = await mount(Sources, store({ answer: broken() }));

    expect(page.findComponent(NotAllowed).exists()).toBe(false);
    expect(page.vm.error).toBe('etcd is down');
  });

  it('on the inventory list', async() => {
    const page = await mount(InventoryList, store({ answer: broken() }), { schema: { id: 'x', attributes: { columns: [] } } });

    expect(page.findComponent(NotAllowed).exists()).toBe(false);
    expect((page.vm as any).error).toBe('etcd is down');
  });
});
