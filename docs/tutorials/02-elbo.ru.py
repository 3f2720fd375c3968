# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # ELBO: вывод и проверка
#
# VAE задаёт совместное распределение $p_\theta(x, z) = p(z)\, p_\theta(x \mid z)$ и
# приближает апостериорное распределение $p_\theta(z \mid x)$ энкодером $q_\phi(z \mid x)$.
# Для нейросетевого декодера нельзя вычислить ни $\log p_\theta(x)$, ни $p_\theta(z \mid x)$.
# В этом уроке мы выведем тождество
#
# $$
# \log p_\theta(x) = \mathrm{ELBO}(x) + \mathrm{KL}\big(q_\phi(z \mid x) \,\|\, p_\theta(z \mid x)\big)
# $$
#
# и проверим его с точностью до ошибок округления на модели, где *все* члены вычисляются
# точно, — с линейно-гауссовским декодером. Для каждого шага указана функция vaekit, которая его вычисляет.

# %%
import math
import warnings

import matplotlib.pyplot as plt
import torch
from torch import nn
from torch.distributions import Independent, MultivariateNormal, Normal, kl_divergence

import vaekit
from vaekit.model import VAE
from vaekit.objectives import elbo_samples, elbo_terms, weight_terms
from vaekit.priors import StandardNormalPrior

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm's notice in notebooks
torch.manual_seed(0)
torch.set_default_dtype(torch.float64)  # closed forms to ~1e-15

# %% [markdown]
# ## Вывод по строчкам
#
# **1. Формула Байеса.** Для *любого* $z$ имеем $p(x) = p(x, z) / p(z \mid x)$, поэтому
#
# $$
# \log p(x) = \log p(x \mid z) + \log p(z) - \log p(z \mid x).
# $$
#
# **2. Вводим $q$.** Прибавим и вычтем $\log q(z \mid x)$. Левая часть от $z$ не зависит,
# так что можно усреднить по $z \sim q(z \mid x)$:
#
# $$
# \log p(x) = \underbrace{\mathbb{E}_{q}\big[\log p(x \mid z) + \log p(z) - \log q(z \mid x)\big]}_{\mathrm{ELBO}(x)}
#  + \underbrace{\mathbb{E}_{q}\big[\log q(z \mid x) - \log p(z \mid x)\big]}_{\mathrm{KL}(q(z \mid x)\,\|\,p(z \mid x)) \;\ge\; 0}.
# $$
#
# Выражение под первым матожиданием — это **логарифм веса значимости**
# $\log w = \log p(x \mid z) + \log p(z) - \log q(z \mid x)$. Все три его слагаемых vaekit
# вычисляет в одном месте — в [`vaekit.objectives.weight_terms`](../reference/objectives.md)
# (а `vaekit.objectives.log_importance_weights` ещё и сам сэмплирует $z$).
#
# **3. Форма, которая используется при обучении.** Если сгруппировать $\log p(z) - \log q(z \mid x)$, получим
#
# $$
# \mathrm{ELBO}(x) = \underbrace{\mathbb{E}_{q}\big[\log p(x \mid z)\big]}_{\text{реконструкция}}
#   - \underbrace{\mathrm{KL}\big(q(z \mid x) \,\|\, p(z)\big)}_{\text{KL-член}}.
# $$
#
# Это и есть [`vaekit.objectives.elbo_terms`](../reference/objectives.md): член
# реконструкции оценивается методом Монте-Карло по репараметризованным сэмплам
# $z_k = \mu + \sigma \odot \epsilon_k$, а KL берётся в замкнутой форме, если она есть в
# `torch.distributions` для данной пары распределений, иначе оценивается как
# $\log q(z_k \mid x) - \log p(z_k)$ на тех же сэмплах (`vaekit.objectives.kl_samples`).
# `vaekit.elbo` возвращает только поле `elbo`.
#
# **4. Следствия.** $\mathrm{ELBO}(x) \le \log p(x)$, причём равенство достигается ровно при
# $q(z \mid x) = p(z \mid x)$. Поэтому максимизация ELBO по $\phi$ приближает $q$ к истинному
# апостериорному распределению, а максимизация по $\theta$ увеличивает $\log p_\theta(x)$
# (или сокращает зазор).

# %% [markdown]
# ## Модель с точными ответами
#
# Возьмём $p(z) = \mathcal{N}(0, I_L)$ и линейный декодер $p(x \mid z) = \mathcal{N}(Wz + b, s^2 I_D)$.
# Тогда всё гауссовское:
#
# $$
# p(x) = \mathcal{N}\big(b,\; W W^\top + s^2 I\big), \qquad
# p(z \mid x) = \mathcal{N}\big(S W^\top (x - b)/s^2,\; S\big), \quad S = \big(I + W^\top W / s^2\big)^{-1}.
# $$
#
# Декодер и два энкодера запишем как небольшие модули, возвращающие объекты
# `torch.distributions`, — больше [`vaekit.model.VAE`](../reference/model.md) от них ничего не требует.

# %%
D, L, s = 5, 2, 0.5
W, b = torch.randn(D, L), torch.randn(D)


class LinearDecoder(nn.Module):
    """p(x|z) = N(W z + b, s^2 I), with W and b as the parameters theta."""

    def __init__(self):
        super().__init__()
        self.W, self.b = nn.Parameter(W), nn.Parameter(b)

    def forward(self, z):
        loc = z @ self.W.T + self.b
        return Independent(Normal(loc, torch.full_like(loc, s)), 1)


S = torch.linalg.inv(torch.eye(L) + W.T @ W / s**2)   # posterior covariance


def exact_posterior(x):
    return MultivariateNormal((x - b) @ W @ S / s**2, covariance_matrix=S)


class Encoder(nn.Module):
    """q(z|x) given as a function of x."""

    def __init__(self, q_of_x):
        super().__init__()
        self.q_of_x, self.latent_dim = q_of_x, L

    def forward(self, x):
        return self.q_of_x(x)


def rough_posterior(x):
    """A deliberately wrong diagonal Gaussian: shifted mean, inflated scale."""
    p = exact_posterior(x)
    return Independent(Normal(p.loc + 0.4, 1.6 * S.diagonal().sqrt()), 1)


def vae_with(q_of_x):
    return VAE(Encoder(q_of_x), LinearDecoder(), StandardNormalPrior(L), data_shape=(D,))


marginal = MultivariateNormal(b, W @ W.T + s**2 * torch.eye(D))   # p(x), exact
x = marginal.sample((8,))                                          # 8 data points

# %% [markdown]
# На рисунке для первой точки данных показаны в двумерном латентном пространстве априорное
# распределение, точное апостериорное и наше грубое $q$.

# %%
def density_on_grid(dist, grid):
    return dist.log_prob(grid).exp()


g = torch.linspace(-3, 3, 200)
grid = torch.stack(torch.meshgrid(g, g, indexing="xy"), -1)      # [200, 200, 2]
x0 = x[:1]
pictured = {"prior p(z)": (StandardNormalPrior(L)(), "gray"),
            "exact p(z|x)": (exact_posterior(x0), "C0"),
            "rough q(z|x)": (rough_posterior(x0), "C3")}
fig, ax = plt.subplots(figsize=(4.5, 4.5))
for name, (dist, color) in pictured.items():
    density = density_on_grid(dist, grid.unsqueeze(-2)).squeeze(-1)
    ax.contour(g, g, density, levels=4, colors=color)
    ax.plot([], [], color=color, label=name)
ax.set(xlabel="$z_1$", ylabel="$z_2$", title="latent space for one x", aspect="equal")
ax.legend(loc="lower left")
plt.show()

# %% [markdown]
# ## Проверка $\log p(x) = \mathrm{ELBO} + \mathrm{KL}(q \,\|\, p(z \mid x))$ для грубого $q$
#
# - $\log p(x)$: точное маргинальное распределение, `MultivariateNormal.log_prob`.
# - $\mathrm{ELBO}$: оценка vaekit по $K = 20\,000$ сэмплам вместе со стандартной ошибкой
#   Монте-Карло. `vaekit.objectives.elbo_samples` — это ядро, которое усредняет `elbo_terms`:
#   оно сохраняет $K$ значений по отдельным сэмплам, и по ним считается стандартная ошибка.
#   Для этой модели у члена реконструкции тоже есть замкнутая форма,
#   $\mathbb{E}_q[\log p(x \mid z)] = -\tfrac{D}{2}\log(2\pi s^2) -
#   \big(\lVert x - W\mu_q - b\rVert^2 + \operatorname{tr}(W \Sigma_q W^\top)\big) / (2 s^2)$,
#   поэтому точное значение ELBO мы тоже вычисляем.
# - $\mathrm{KL}(q \,\|\, p(z \mid x))$: `torch.distributions.kl_divergence` между двумя гауссианами.

# %%
def exact_elbo(q):
    """Closed-form ELBO of a Gaussian q(z|x) under the linear-Gaussian model."""
    loc, cov = q.mean, q.covariance_matrix if hasattr(q, "covariance_matrix") else \
        torch.diag_embed(q.variance)
    residual = x - loc @ W.T - b
    reconstruction = (-D / 2 * math.log(2 * math.pi * s**2)
                      - ((residual**2).sum(-1) + torch.einsum("ij,bjk,ik->b", W, cov, W)) / (2 * s**2))
    kl_prior = kl_divergence(MultivariateNormal(loc, cov), MultivariateNormal(torch.zeros(L), torch.eye(L)))
    return reconstruction - kl_prior


def as_mvn(q):
    return MultivariateNormal(q.mean, torch.diag_embed(q.variance))


rough = vae_with(rough_posterior)
K = 20_000
with torch.no_grad():
    per_sample = elbo_samples(rough, x, num_samples=K)   # log p(x|z_k) and KL, each [K, B]
terms = per_sample.terms()                                # the K-sample ELBO, as elbo_terms gives it
elbo_stderr = per_sample.reconstruction.std(0) / math.sqrt(K)   # the KL is exact: no noise

log_px = marginal.log_prob(x)
kl_posterior = kl_divergence(as_mvn(rough_posterior(x)), exact_posterior(x))
elbo_closed = exact_elbo(rough_posterior(x))

print(" log p(x)   ELBO (vaekit, K=20000)   ELBO exact   KL(q||p(z|x))   ELBO exact + KL")
for i in range(len(x)):
    print(f"{log_px[i]:9.4f}   {terms.elbo[i]:9.4f} ± {elbo_stderr[i]:.4f}"
          f"   {elbo_closed[i]:10.4f}   {kl_posterior[i]:13.4f}   {elbo_closed[i] + kl_posterior[i]:15.4f}")
print("max |log p(x) - (ELBO + KL)| =", float((log_px - elbo_closed - kl_posterior).abs().max()))
print("max |vaekit ELBO - exact ELBO| / SE =", float(((terms.elbo - elbo_closed) / elbo_stderr).abs().max()))

# %% [markdown]
# Тождество выполняется с точностью до округления, а оценка ELBO методом Монте-Карло в vaekit
# совпадает с замкнутой формой в пределах нескольких стандартных ошибок. (Здесь и $q$, и $p(z)$ —
# диагональные гауссианы, поэтому KL-член vaekit вычисляет в замкнутой форме, и шумит только
# член реконструкции.) Зазор $\mathrm{KL}(q \,\|\, p(z \mid x))$ одинаков для всех $x$ лишь потому,
# что наше грубое $q$ везде ошибается одинаково: тот же сдвиг, та же ковариация.
#
# ## Зазор закрывается на точном апостериорном распределении
#
# Теперь будем двигать $q$ от грубой гауссианы к точному апостериорному распределению:
# $\mu_t = (1-t)\,\mu_{\text{rough}} + t\, \mu_{\text{exact}}$,
# $\Sigma_t = (1-t)\,\Sigma_{\text{rough}} + t\, S$ (полная ковариация, так что при $t = 1$ приближение точное).
# ELBO растёт до $\log p(x)$, и на всём пути зазор равен $\mathrm{KL}(q_t \,\|\, p(z \mid x))$.

# %%
def q_between(t):
    def q_of_x(x_):
        rough_q, exact_q = as_mvn(rough_posterior(x_)), exact_posterior(x_)
        return MultivariateNormal((1 - t) * rough_q.mean + t * exact_q.mean,
                                  (1 - t) * rough_q.covariance_matrix + t * S)
    return q_of_x


ts = torch.linspace(0, 1, 21)
curve = torch.stack([exact_elbo(q_between(t)(x))[0] for t in ts])
gap = torch.stack([kl_divergence(q_between(t)(x), exact_posterior(x))[0] for t in ts])
t_dots = [0.0, 0.25, 0.5, 0.75, 1.0]
with torch.no_grad():
    dots = [elbo_terms(vae_with(q_between(t)), x[:1], num_samples=2000).elbo[0] for t in t_dots]

fig, ax = plt.subplots(figsize=(6, 3.8))
ax.axhline(log_px[0], color="k", label="log p(x) (exact)")
ax.plot(ts, curve, color="C0", label="ELBO (closed form)")
ax.fill_between(ts, curve, curve + gap, color="C0", alpha=0.2, label="KL(q_t || p(z|x))")
ax.plot(t_dots, dots, "o", color="C3", label="vaekit elbo_terms, K = 2000")
ax.set(xlabel="t  (0: rough q, 1: exact posterior)", ylabel="nats", title="the gap is the KL")
ax.legend(loc="lower right")
plt.show()

# %% [markdown]
# ## С точным апостериорным распределением каждый сэмпл даёт $\log p(x)$
#
# При $q(z \mid x) = p(z \mid x)$ первая строка вывода означает, что
# $\log w = \log p(x \mid z) + \log p(z) - \log q(z \mid x) = \log p(x)$ для *любого* $z$:
# дисперсия оценки равна нулю. В `torch.distributions` нет замкнутой формы KL между
# `MultivariateNormal` с полной ковариацией и диагональным априорным распределением vaekit,
# поэтому `elbo_terms` переходит к оценке KL методом Монте-Карло на том же сэмпле, и уже один
# сэмпл даёт в точности $\log p(x)$. Оценка по значимости
# [`vaekit.log_likelihood`](../reference/evaluation.md) (она усредняет $w$, а не $\log w$)
# точна по той же причине.

# %%
exact = vae_with(exact_posterior)
with torch.no_grad():
    q_exact = exact.encoder(x)
    log_w = weight_terms(exact, x, q_exact, q_exact.sample((5,))).log_w   # [5 draws, B]
    one_sample = vaekit.elbo(exact, x, num_samples=1)
print("log p(x)                      ", log_px[:4])
print("log w at 5 draws, first x     ", log_w[:, 0])
print("vaekit.elbo, K = 1            ", one_sample[:4])
print("vaekit.log_likelihood, K = 10 ", vaekit.log_likelihood(exact, x, num_samples=10)[:4])
print("max |ELBO - log p(x)| =", float((one_sample - log_px).abs().max()))
