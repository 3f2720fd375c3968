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
# # ELBO：推导与验证
#
# VAE 定义联合分布 $p_\theta(x, z) = p(z)\, p_\theta(x \mid z)$，并用编码器
# $q_\phi(z \mid x)$ 近似后验 $p_\theta(z \mid x)$。当解码器是神经网络时，
# $\log p_\theta(x)$ 和 $p_\theta(z \mid x)$ 都无法直接计算。本教程推导恒等式
#
# $$
# \log p_\theta(x) = \mathrm{ELBO}(x) + \mathrm{KL}\big(q_\phi(z \mid x) \,\|\, p_\theta(z \mid x)\big)
# $$
#
# 并在一个每一项都*能*精确计算的模型上——线性高斯解码器——验证它，误差只到舍入级别。
# 每一步都注明了 vaekit 中计算它的函数。

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
# ## 逐行推导
#
# **1. 贝叶斯公式。** 对*任意* $z$，都有 $p(x) = p(x, z) / p(z \mid x)$，因此
#
# $$
# \log p(x) = \log p(x \mid z) + \log p(z) - \log p(z \mid x).
# $$
#
# **2. 引入 $q$。** 加上再减去 $\log q(z \mid x)$；左边与 $z$ 无关，所以可以对
# $z \sim q(z \mid x)$ 取平均：
#
# $$
# \log p(x) = \underbrace{\mathbb{E}_{q}\big[\log p(x \mid z) + \log p(z) - \log q(z \mid x)\big]}_{\mathrm{ELBO}(x)}
#  + \underbrace{\mathbb{E}_{q}\big[\log q(z \mid x) - \log p(z \mid x)\big]}_{\mathrm{KL}(q(z \mid x)\,\|\,p(z \mid x)) \;\ge\; 0}.
# $$
#
# 第一个期望里的量是**对数重要性权重**
# $\log w = \log p(x \mid z) + \log p(z) - \log q(z \mid x)$。vaekit 在同一处计算它的三项：
# [`vaekit.objectives.weight_terms`](../reference/objectives.md)
# （`vaekit.objectives.log_importance_weights` 还会替你抽取 $z$）。
#
# **3. 训练时使用的形式。** 把 $\log p(z) - \log q(z \mid x)$ 合并，得到
#
# $$
# \mathrm{ELBO}(x) = \underbrace{\mathbb{E}_{q}\big[\log p(x \mid z)\big]}_{\text{重构项}}
#   - \underbrace{\mathrm{KL}\big(q(z \mid x) \,\|\, p(z)\big)}_{\text{到先验的 KL}},
# $$
#
# 即 [`vaekit.objectives.elbo_terms`](../reference/objectives.md)：重构项是对重参数化样本
# $z_k = \mu + \sigma \odot \epsilon_k$ 的蒙特卡洛平均；KL 项在 `torch.distributions`
# 为这对分布提供闭式解时用闭式解，否则在同一批样本上用 $\log q(z_k \mid x) - \log p(z_k)$
# 估计（`vaekit.objectives.kl_samples`）。`vaekit.elbo` 只返回其中的 `elbo` 字段。
#
# **4. 推论。** $\mathrm{ELBO}(x) \le \log p(x)$，当且仅当 $q(z \mid x) = p(z \mid x)$
# 时取等号。因此，对 $\phi$ 最大化 ELBO 会把 $q$ 推向真实后验；对 $\theta$ 最大化则会提高
# $\log p_\theta(x)$（或缩小两者的差距）。

# %% [markdown]
# ## 一个有精确答案的模型
#
# 取 $p(z) = \mathcal{N}(0, I_L)$，线性解码器 $p(x \mid z) = \mathcal{N}(Wz + b, s^2 I_D)$。
# 这时一切都是高斯分布：
#
# $$
# p(x) = \mathcal{N}\big(b,\; W W^\top + s^2 I\big), \qquad
# p(z \mid x) = \mathcal{N}\big(S W^\top (x - b)/s^2,\; S\big), \quad S = \big(I + W^\top W / s^2\big)^{-1}.
# $$
#
# 我们把解码器和两个编码器写成返回 `torch.distributions` 对象的小模块——
# [`vaekit.model.VAE`](../reference/model.md) 对它们的要求仅此而已。

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
# 下图针对第一个数据点，在二维潜空间中画出先验、精确后验以及我们粗糙的 $q$。

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
# ## 验证：对粗糙的 $q$，$\log p(x) = \mathrm{ELBO} + \mathrm{KL}(q \,\|\, p(z \mid x))$
#
# - $\log p(x)$：精确的边缘分布，`MultivariateNormal.log_prob`。
# - $\mathrm{ELBO}$：vaekit 用 $K = 20\,000$ 个样本给出的估计及其蒙特卡洛标准误。
#   `vaekit.objectives.elbo_samples` 是 `elbo_terms` 求平均之前的核心函数：它保留每个样本上的
#   $K$ 个值，标准误由此算出。对这个模型，重构项也有闭式解，
#   $\mathbb{E}_q[\log p(x \mid z)] = -\tfrac{D}{2}\log(2\pi s^2) -
#   \big(\lVert x - W\mu_q - b\rVert^2 + \operatorname{tr}(W \Sigma_q W^\top)\big) / (2 s^2)$，
#   所以我们同时计算精确的 ELBO。
# - $\mathrm{KL}(q \,\|\, p(z \mid x))$：两个高斯分布之间的 `torch.distributions.kl_divergence`。

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
# 恒等式在浮点舍入误差范围内成立，vaekit 的蒙特卡洛 ELBO 与闭式解的差距也在几个标准误以内。
# （这里 $q$ 和 $p(z)$ 都是对角高斯，vaekit 用闭式解计算到先验的 KL，只有重构项带有噪声。）
# 差距 $\mathrm{KL}(q \,\|\, p(z \mid x))$ 对所有 $x$ 都相同，只是因为我们粗糙的 $q$
# 在每处犯的错误都一样：同样的偏移，同样的协方差。
#
# ## 在精确后验处差距消失
#
# 现在让 $q$ 从粗糙的高斯逐渐移向精确后验：
# $\mu_t = (1-t)\,\mu_{\text{rough}} + t\, \mu_{\text{exact}}$，
# $\Sigma_t = (1-t)\,\Sigma_{\text{rough}} + t\, S$（全协方差，因此 $t = 1$ 时恰为精确后验）。
# ELBO 一路上升到 $\log p(x)$，而差距始终等于 $\mathrm{KL}(q_t \,\|\, p(z \mid x))$。

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
# ## 用精确后验时，每个样本都给出 $\log p(x)$
#
# 当 $q(z \mid x) = p(z \mid x)$ 时，推导的第 1 行说明：对*任意* $z$，
# $\log w = \log p(x \mid z) + \log p(z) - \log q(z \mid x) = \log p(x)$，估计量的方差为零。
# `torch.distributions` 没有全协方差 `MultivariateNormal` 与 vaekit 对角先验之间 KL 的闭式解，
# 因此 `elbo_terms` 退回到在同一样本上的蒙特卡洛 KL，只用一个样本就得到 $\log p(x)$。
# 基于重要性采样的 [`vaekit.log_likelihood`](../reference/evaluation.md)（它平均的是 $w$
# 而不是 $\log w$）出于同样的原因也是精确的。

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
